"""Where things run: one narrow Protocol per kind of resource, one package per provider.

Providers: ``local`` (the embedded default: real processes and real stores on this machine) and
``aws`` (boto3 and opensearch-py; the kinds it has so far are listed in ``platform.factory``).
Only ``platform.factory`` picks one.
"""

from mangaassist.platform.tables import Condition, ConditionFailed, Item, Tables

__all__ = ["Condition", "ConditionFailed", "Item", "Tables"]
