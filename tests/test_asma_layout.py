"""ASMa's split: models and objectives in ``fastskel.methods``, the loops in ``fastskel.engine``;
the public names keep working, and importing the method never imports the engine (no upward reach)."""
import subprocess
import sys

import fastskel.engine.align as align
import fastskel.engine.distill as engine_distill
import fastskel.methods as methods
import fastskel.methods.asma as asma
from fastskel.methods import asma_aligner, asma_student


def test_moved_names_resolve_to_their_new_homes():
    assert asma.ASMaAligner is asma_aligner.ASMaAligner and asma.AlignerConfig is asma_aligner.AlignerConfig
    for name in ("ASMaStudent", "build_student", "distillation_loss", "ensemble_logits", "model_cost"):
        assert getattr(asma, name) is getattr(asma_student, name)
    assert asma.distill is engine_distill.distill is methods.distill
    assert set(asma.__all__) <= set(dir(asma))


def test_importing_the_method_does_not_import_the_engine():
    code = ("import sys, fastskel.methods.asma as a, fastskel.methods.asma_aligner, fastskel.methods.asma_student\n"
            "a.ASMaAligner, a.ASMaStudent\n"
            "print(sorted(m for m in sys.modules if m.startswith('fastskel.engine')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_distill_uses_the_engine_loop():
    import inspect

    from fastskel.engine import cli

    src = inspect.getsource(cli.cmd_distill)
    assert "from .distill import distill" in src and "methods.asma" not in src
    assert callable(align.fit_aligner) and callable(align.accuracy)
