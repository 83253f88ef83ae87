"""The three methods (AMR with its MAMP baseline, ASMa, SLiM): models, objectives, paper defaults."""
