"""``python -m cv_pipelines.serving``: serve ``@champion`` (and ``@challenger``) over HTTP."""

from cv_pipelines.serving.service import main

if __name__ == "__main__":
    main()
