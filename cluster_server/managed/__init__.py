"""Managed cloud resources a template asks for beside its nodes (``resources``: RDS, Cloud SQL).

Named "managed" after what the clouds call these (managed databases), and because
``cluster_server/resources.py`` already holds the automators' uploaded plugin resources.

``records``: their rows in the store (the generated password sealed at rest); ``tasks``: what
their CREATE, CONFIRM and DELETE tasks do through the ``shoal.databases`` plugins; ``drift``:
one batched look at what the cloud still holds, for ``cluster check``.
"""
