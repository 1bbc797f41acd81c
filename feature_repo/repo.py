"""Feast definitions of the recsys project, for the `feast` CLI.

The objects come from `recsys.features.definitions`, built from the offline tables in
RECSYS_FEATURES_OFFLINE_DIR (feature names depend on the dataset), exactly as `recsys materialize` applies
them. From the repository root, with the same environment as the services:

    export RECSYS_FEAST_DIR=$PWD/var/feast RECSYS_FEATURES_OFFLINE_DIR=$PWD/var/features
    .venv/bin/feast -c feature_repo plan                                   # SQLite online store
    .venv/bin/feast -c feature_repo -f feature_repo/feature_store.redis.yaml plan   # Redis online store
"""

from recsys.features.settings import FeatureSettings
from recsys.features.store import prepare

FEAST_OBJECTS, LAYOUT = prepare(FeatureSettings.from_env())

# Feast collects the objects it finds among this module's attributes.
for _obj in FEAST_OBJECTS:
    globals()[f"{type(_obj).__name__.lower()}_{_obj.name}"] = _obj
