"""Former home of the catalog: the schemas now live in ``catalog.schemas`` and the store in ``catalog.store``.

Kept only so that modules not yet moved to the new names keep importing; import from the new modules.
"""

from modelhost.catalog.schemas import MODEL_ID_PATTERN, ModelCreate, ModelEntry, ModelFields, ModelUpdate
from modelhost.catalog.store import Catalog, CodePolicy

__all__ = ["MODEL_ID_PATTERN", "Catalog", "CodePolicy", "ModelCreate", "ModelEntry", "ModelFields", "ModelUpdate"]
