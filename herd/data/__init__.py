"""herd's pretraining data pipeline: documents stream through stages (filters, dedup) run by an executor.

`run_pipeline(path_or_config)` runs a YAML pipeline (`herd data run PIPELINE.yaml`); stages also compose in Python.
"""

from herd.data.document import BadRecord, Document
from herd.data.pipeline import STAGE_TYPES, OutputConfig, PipelineConfig, build_stage, run_pipeline
from herd.data.readers import InputConfig, read_documents
from herd.data.stage import DocumentStage, GlobalStage, Stage, StageContext
from herd.data.stats import StageStats

__all__ = [
    "STAGE_TYPES",
    "BadRecord",
    "Document",
    "DocumentStage",
    "GlobalStage",
    "InputConfig",
    "OutputConfig",
    "PipelineConfig",
    "Stage",
    "StageContext",
    "StageStats",
    "build_stage",
    "read_documents",
    "run_pipeline",
]
