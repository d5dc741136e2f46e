"""Many tasks at once: a spec of tasks x criteria x alphas x seeds, run here or on Ray (``slsviz sweep``).

    >>> from slsviz.sweep import load_spec, run_sweep
    >>> run = run_sweep(load_spec("examples/sweep_quick.yaml"), "sweeps/quick", backend="ray")
    >>> run.results.query("criterion == 'sls'")[["task", "depth", "accuracy_head_refit"]]
"""

from slsviz.sweep.runner import SweepRun, run_sweep
from slsviz.sweep.spec import SweepSpec, TaskEntry, Training, load_spec, spec_from_dict

__all__ = ["SweepRun", "SweepSpec", "TaskEntry", "Training", "load_spec", "run_sweep", "spec_from_dict"]
