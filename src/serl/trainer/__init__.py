"""The SeRL training loop: its parts (build.py), the loop itself (loop.py), problem sources, checkpoints, logging."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serl.config import SerlConfig


def run_training(cfg: SerlConfig, run_dir: Path | None = None, resume: bool = False) -> Path:
    """Train per CFG in RUN_DIR (resuming from its latest checkpoint when RESUME); return the run dir."""
    from serl.parallel import world_of
    from serl.trainer.build import build_parts
    from serl.trainer.distributed import make_accelerator, reset_rank_dir, run_on_main
    from serl.trainer.logger import RunLogger
    from serl.trainer.loop import SerlTrainer, prepare_run_dir
    from serl.trainer.sources import StalledError

    accelerator = make_accelerator()  # None for a plain single CPU process
    rank, _ = world_of(accelerator)
    run_dir = run_on_main(accelerator, lambda: prepare_run_dir(cfg, run_dir, resume))
    wandb_cfg = {"project": cfg.log.wandb_project, "name": run_dir.name, "dir": str(run_dir)} if cfg.log.wandb else None
    trainer = None
    main = rank == 0  # other ranks log quietly to a scratch folder
    with RunLogger(
        reset_rank_dir(run_dir, rank),
        cfg.log.console if main else "quiet",
        total_steps=0,
        tensorboard=cfg.log.tensorboard and main,
        wandb_cfg=wandb_cfg if main else None,
    ) as log:
        trainer = SerlTrainer(cfg, run_dir, log, build_parts(cfg, run_dir, log, accelerator))
        log.total_steps = trainer.total_steps
        if resume and not trainer.resume():
            log.info(f"no checkpoint in {run_dir}; starting from step 0")
        log.reset_total(trainer.total_steps, trainer.step)
        try:
            trainer.fit()
        except StalledError as err:
            log.warning(str(err))
            raise SystemExit(3) from err
        finally:
            trainer.close()
    return run_dir
