"""Training recipes: align (stage 1) and sft (stage 2) of the LLaVA recipe, on accelerate."""


def end_distributed(ok: bool = True) -> None:
    """Leave the process group cleanly before the interpreter exits.

    Under ``accelerate launch`` a rank that exits with its gloo/NCCL group still alive can abort in
    the group's C++ destructor ("terminate called without an active exception") while another rank
    is still writing the final checkpoint; waiting for every rank and destroying the group first
    makes every process exit 0. After an error (``ok=False``) the group is destroyed without the
    barrier, which the failed ranks might never reach. A no-op in a single process.
    """
    import sys

    if "torch" not in sys.modules:  # nothing distributed ran (e.g. `vrm --help`): don't import torch
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()
