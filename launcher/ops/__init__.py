"""What the commands do to a run or a sweep: launch and follow its job, set up its folder, sweep,
rank, find the lr, and eval, predict or export a finished run (the CLI parses, these act)."""
