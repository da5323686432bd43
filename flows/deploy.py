"""Entry points named in prefect.yaml.

Prefect loads an entry point by file path, as a script outside any package,
so relative imports cannot work here: this file re-exports the flows through
absolute imports of the installed ``lobsweep.flows`` package.
"""

from lobsweep.flows.full_search import full_search
from lobsweep.flows.stages import ensemble_flow, feature_search_flow, hpo_flow, package_flow, retrain_flow

__all__ = ["full_search", "ensemble_flow", "feature_search_flow", "hpo_flow", "package_flow", "retrain_flow"]
