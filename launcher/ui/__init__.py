"""What the user sees: the console, the progress bar and the summary table, waiting for a job
(Ctrl-C included) and the pictures drawn beside their JSON."""
