"""The study floor: reading a finished sweep's run folders and turning them into statistics, tables and plots
(what ``python -m gan.report`` writes)."""
