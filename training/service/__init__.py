"""The training service: retrain requests in, a registered and evaluated candidate out.

``job`` turns a request into an MLflow run (data, sweep, evaluation, registration);
``consumer`` runs jobs one at a time from the retrain topic and announces each candidate on
the models topic; the canary (``deeptrust.training.canary``) decides whether it is promoted.
"""
