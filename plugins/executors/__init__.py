"""Built-in executors: in process, worker processes, Ray and Slurm (submitit)."""
