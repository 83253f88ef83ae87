"""Helpers shared by the stages of ``benchmarks/gpu_check.py`` (processes, deadlines, partial results)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
TAIL = 3000
RESULT: Dict[str, Optional[Path]] = {"path": None}   # a stage process's result file (partial results survive a kill)


def _run(cmd: List[str], timeout: float, env: Optional[dict] = None) -> Tuple[int, str]:
    """``(returncode, stdout+stderr)``; its process group is killed at ``timeout`` (rc 124)."""
    p = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=max(timeout, 1))
        return p.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        return 124, (out or "") + f"\n[gpu_check] killed after {timeout:.0f}s\n"


def _env_no_interpret() -> dict:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    return env


def _device(dry: bool):
    import torch

    return torch.device("cuda" if torch.cuda.is_available() and not dry else "cpu")


def _partial(details: Dict[str, Any], what: str) -> None:
    if RESULT["path"] is not None:
        RESULT["path"].write_text(json.dumps({"status": "fail", "reason": f"stopped during {what}",
                                            "details": details}, default=str))


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()



def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "" if v is None else str(v)
