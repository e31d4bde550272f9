"""The SeRL training loop: its parts (build.py), the loop itself (loop.py), problem sources, checkpoints, logging."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serl.config import SerlConfig


def run_training(cfg: SerlConfig, run_dir: Path | None = None, resume: bool = False) -> Path:
    """Train per CFG in RUN_DIR (resuming from its latest complete checkpoint when RESUME); return the run dir.

    SIGINT and SIGTERM stop the run (exit status 128 + the signal's number) and a full disk stops it with a
    `WriteError`; either way the last complete checkpoint stays `latest` and the message says how to resume.
    """
    from serl.io import WriteError
    from serl.parallel import world_of
    from serl.rundir import RunDir
    from serl.trainer.build import build_parts
    from serl.trainer.checkpoint import find_resumable
    from serl.trainer.distributed import make_accelerator, reset_rank_dir, run_on_main
    from serl.trainer.logger import RunLogger
    from serl.trainer.loop import SerlTrainer, prepare_run_dir
    from serl.trainer.signals import Interrupted, resume_hint, stop_on_signals
    from serl.trainer.sources import StalledError

    accelerator = make_accelerator()  # None for a plain single CPU process
    rank, _ = world_of(accelerator)
    run_dir = run_on_main(accelerator, lambda: prepare_run_dir(cfg, run_dir, resume))
    checkpoints = RunDir(run_dir).checkpoints
    wandb_cfg = {"project": cfg.log.wandb_project, "name": run_dir.name, "dir": str(run_dir)} if cfg.log.wandb else None
    trainer = None
    main = rank == 0  # other ranks log quietly to a scratch folder
    with (
        stop_on_signals(),
        RunLogger(
            reset_rank_dir(run_dir, rank),
            cfg.log.console if main else "quiet",
            total_steps=0,
            tensorboard=cfg.log.tensorboard and main,
            wandb_cfg=wandb_cfg if main else None,
        ) as log,
    ):
        try:
            # before the model loads: a damaged or foreign checkpoint is reported in seconds
            checkpoint = find_resumable(checkpoints, SerlTrainer.STATE_ENTRIES, log.warning) if resume else None
            trainer = SerlTrainer(cfg, run_dir, log, build_parts(cfg, run_dir, log, accelerator))
            log.total_steps = trainer.total_steps
            if resume:
                if checkpoint is None:
                    log.warning(
                        f"no checkpoint in {checkpoints}: starting over from step 0 (the interrupted attempt's "
                        "metrics, rollouts and instruction log are cleared)"
                    )
                trainer.resume(checkpoint)
            log.reset_total(trainer.total_steps, trainer.step)
            trainer.fit()
        except StalledError as err:
            log.warning(str(err))
            raise SystemExit(3) from err
        except Interrupted as err:
            step = f" during step {trainer.step + 1}" if trainer is not None else " while starting"
            log.warning(f"{err}{step}; {resume_hint(run_dir)}")
            raise SystemExit(128 + err.signum) from None
        except WriteError as err:
            err.hint = resume_hint(run_dir)
            raise
        finally:
            if trainer is not None:
                trainer.close()
    return run_dir
