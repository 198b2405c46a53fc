"""Alert subscriptions delivered by webhook: ``deeptrust alerts notify``.

``subscriptions`` reads who wants which alerts, ``retry`` decides when to try again,
``signing`` signs bodies, ``delivery`` posts one alert to one subscriber, ``metrics`` counts
the outcomes and ``service`` runs it all against the alerts topic.
"""
