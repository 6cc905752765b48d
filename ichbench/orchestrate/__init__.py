"""Ray orchestration: pretraining as a (GPU) task, then the k folds as parallel tasks."""
