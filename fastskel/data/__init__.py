"""Skeleton data: format readers, the synthetic default dataset, batched transforms, datasets."""
