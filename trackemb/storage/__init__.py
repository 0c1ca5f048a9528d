"""trackemb.storage: the LMDB PatchStore (records, schema, writer, sharded reader, inspection)."""

from trackemb.errors import MissingKeyError
from trackemb.storage.records import (
    PairRecord,
    PatchRecord,
    TrackRecord,
    TripletRecord,
    VideoHarvest,
    VideoRecord,
    patch_key,
)
from trackemb.storage.schema import SCHEMA_VERSION
from trackemb.storage.shards import StoreReader, open_reader
from trackemb.storage.store import PatchStore
from trackemb.storage.triplets import Plan as TripletPlan

__all__ = [
    "SCHEMA_VERSION",
    "MissingKeyError",
    "PairRecord",
    "PatchRecord",
    "PatchStore",
    "StoreReader",
    "TrackRecord",
    "TripletRecord",
    "VideoHarvest",
    "VideoRecord",
    "open_reader",
    "patch_key",
    "TripletPlan",
]
