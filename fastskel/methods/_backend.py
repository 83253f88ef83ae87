"""``set_backend`` / ``backend`` shared by the methods: one switch for every op of a model."""
from __future__ import annotations

from typing import Optional

from fastskel.ops import _checks as chk

BACKENDS = ("auto", "triton", "cpp", "torch")


class BackendMixin:
    """For an ``nn.Module`` with ``self.config.backend``: every submodule with a ``backend``
    attribute (attention, graph conv, losses, …) follows :meth:`set_backend`."""

    def set_backend(self, backend: Optional[str]) -> None:
        """Switch every op of this model to ``backend`` (None = the process default)."""
        if backend is not None:
            chk.choice(backend, "backend", BACKENDS)
        self.config.backend = backend
        for m in self.modules():
            if m is not self and hasattr(m, "backend"):
                m.backend = backend

    @property
    def backend(self) -> Optional[str]:
        return self.config.backend
