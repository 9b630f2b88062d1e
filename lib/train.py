"""`python -m lib.train`: list the plan's runs (`status`) or train what is missing (`materialise`, the default).

    python -m lib.train --profile cpu status
    python -m lib.train --profile cpu --runs 02/hamam --folds 3      # one job of the plan (a Slurm array task)

The fold-training code itself is `lib.training`; nothing imports this module.
"""

from lib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
