"""Where things run: one narrow Protocol per kind of resource, one package per provider.

Providers: ``local`` (the embedded default: real processes and real stores on this machine).
The ``aws`` provider implements the same protocols with boto3 (later issues).
"""

from mangaassist.platform.tables import Condition, ConditionFailed, Item, Tables

__all__ = ["Condition", "ConditionFailed", "Item", "Tables"]
