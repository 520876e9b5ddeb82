"""The black-box search, for any space searched trial by trial: Optuna studies whose trials are
networks drawn by the space, the budget checked on the latency table before a network is scored,
several workers on one storage, the samplers (random, regularised evolution, TPE, NSGA-II),
re-ranking and the closed loop, and ``study.json``.

``space.py`` is what a space gives (``BlackBoxSpace``: how a trial draws a network, how it is
recorded and read; an ``Evaluator`` that scores networks); ``study.py`` runs a study
(``run_study``); ``storage.py`` holds the storages, workers and samplers, ``evolution.py``
regularised evolution, ``selection.py`` re-ranking and the closed loop. A space registers its
``BlackBoxSpace`` as its entry's ``study`` part, so a second black-box space is one package.
The package imports nothing itself: the command line reads ``storage.SAMPLERS`` without loading
the study's dependencies.
"""
