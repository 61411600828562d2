"""The run floor: a job's config checked and planned, its model, data and Trainer built, the fit, the run folders
and their records, the callbacks, checkpoints and the packed launcher that trains a sweep as one population."""
