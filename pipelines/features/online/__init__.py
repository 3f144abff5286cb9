"""The online feature state: features of one incoming transfer, equal to the batch engine's,
in time proportional to its parties' recent history rather than the whole ledger.

- `store`: where the state lives (`StateStore`: byte records under string keys), with the
  embedded and Redis backends beside it;
- `records`: the fixed-size record layout, key names and the stable string hash;
- `compute`: the features of one transfer from its payer's, payee's and device's records, and
  compaction of old records into summaries;
- `state`: `OnlineFeatureState`, reads and updates (what "the same as the batch" means online
  is in its docstring);
- `bootstrap`: the state built in bulk from a ledger or the warehouse.
"""

from pipelines.features.online.bootstrap import bootstrap_from_warehouse, build_state
from pipelines.features.online.state import OnlineFeatureState

__all__ = ["OnlineFeatureState", "bootstrap_from_warehouse", "build_state"]
