"""Task families: how rows become model requests and answers become output columns.

A family implements the narrow protocol of :mod:`pipelines.tasks.base`;
:class:`pipelines.tasks.task.Task` binds it to a job; :mod:`pipelines.tasks.registry` names
the families by ``task.kind``.
"""
