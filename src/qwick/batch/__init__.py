"""Batch files through the engine: rows in, rows out (`qwick batch`, `llm.batch`). No Ray here: `qwick.ray`
runs the same tasks on a Ray cluster.

`rows.py` reads inputs, `tasks.py` maps each task onto the engine client, `plan.py` picks the rows still to do,
`runner.py` keeps many rows in flight, `output.py` writes and resumes, `job.py` runs a whole file, `cli.py` is
the command's flags. Nothing is imported here, so `qwick --help` stays light."""
