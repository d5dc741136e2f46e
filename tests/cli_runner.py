"""Run many slsviz command lines, each in a process of its own, without paying Python's and torch's start-up
for every one: this process imports them once, then forks a child per command line, which runs the CLI
as ``python -m slsviz`` does (its exit code, its own stdout and stderr, a traceback printed as the
interpreter prints it). Tests only.

    python tests/cli_runner.py JOBS.json   # [{"argv": [...], "cwd": ..., "stdout": path, "stderr": path}, ...]

Writes each job's exit code into ``JOBS.json`` + ``.codes`` (a JSON list), in the jobs' order; runs two at a time.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


import slsviz.cli
import slsviz.study  # noqa: F401 - torch and what most command lines import next, before any fork


def _child(job: dict) -> None:
    """In the forked child: stdout and stderr to the job's files, the CLI, the interpreter's exit."""
    os.chdir(job["cwd"])
    for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = ["slsviz", *job["argv"]]
    try:
        code = slsviz.cli.main(job["argv"])
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def main() -> None:
    jobs = json.loads(open(sys.argv[1], encoding="utf-8").read())
    codes: list[int | None] = [None] * len(jobs)
    running: dict[int, int] = {}
    for index, job in enumerate(jobs):
        while len(running) >= 2:
            pid, status = os.wait()
            codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
        pid = os.fork()
        if pid == 0:
            _child(job)
        running[pid] = index
    while running:
        pid, status = os.wait()
        codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
    with open(sys.argv[1] + ".codes", "w", encoding="utf-8") as f:
        json.dump(codes, f)


if __name__ == "__main__":
    main()
