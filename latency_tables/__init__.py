"""Per-layer latency lookup tables: measure (or import) a table for a device, predict subnet latency from it.

Public API (see each module for the contract):
    backends:   create_backend, list_backends, supported_precisions, Backend, Measurement
    protocol:   MeasurementProtocol (measurement budget and estimators), STATISTICS (median, best, p90, p99, mean)
    table:      LatencyTable, build_table, enumerate_layers, measure_models, PrecisionMismatchError,
                StatisticMismatchError
    ofa_yaml:   import_ofa_yaml, export_ofa_yaml (OFA's <r>_lookup_table.yaml files)
    model_cache: open_cache (content-addressed exported models shared by builds, validations, kits)
    predictor:  LatencyPredictor, fit_correction, predict_latency, validate, ValidationReport, plot_predicted_vs_measured,
                read_measured_archs, validate_measured (latencies measured elsewhere, e.g. on a phone)
    kit:        write_kit, import_kit_logs, import_kit_csv, load_kit (phone kits; see docs/phones.md)
    benchmark_log: parse_log, parse_log_file (TFLite benchmark_model output)

Names are imported lazily (PEP 562): measuring processes import `latency_tables.backends` without pulling in
torch through this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names `__getattr__` resolves at run time, visible to the type checker
    from latency_tables.backends import (
        Backend,
        Measurement,
        UnsupportedPrecisionError,
        create_backend,
        list_backends,
        supported_precisions,
    )
    from latency_tables.benchmark_log import BenchmarkLogError, BenchmarkRun, parse_log, parse_log_file
    from latency_tables.kit import KitError, KitManifest, import_kit_csv, import_kit_logs, load_kit, write_kit
    from latency_tables.model_cache import open_cache
    from latency_tables.ofa_yaml import OfaYamlError, export_ofa_yaml, import_ofa_yaml
    from latency_tables.predictor import (
        LatencyPredictor,
        ValidationReport,
        fit_correction,
        plot_predicted_vs_measured,
        predict_latency,
        read_measured_archs,
        validate,
        validate_measured,
    )
    from latency_tables.protocol import STATISTICS, MeasurementProtocol, Protocol
    from latency_tables.table import (
        ArchOutsideTableError,
        LatencyTable,
        LatencyTableError,
        MissingLayerError,
        PrecisionMismatchError,
        StatisticMismatchError,
        TableHashError,
        TableMeta,
        TableSchemaError,
        build_table,
        enumerate_layers,
        measure_models,
    )

_EXPORTS = {
    "Backend": "latency_tables.backends",
    "Measurement": "latency_tables.backends",
    "create_backend": "latency_tables.backends",
    "list_backends": "latency_tables.backends",
    "supported_precisions": "latency_tables.backends",
    "UnsupportedPrecisionError": "latency_tables.backends",
    "MeasurementProtocol": "latency_tables.protocol",
    "Protocol": "latency_tables.protocol",  # deprecated alias of MeasurementProtocol
    "STATISTICS": "latency_tables.protocol",
    "StatisticMismatchError": "latency_tables.table",
    "import_ofa_yaml": "latency_tables.ofa_yaml",
    "export_ofa_yaml": "latency_tables.ofa_yaml",
    "OfaYamlError": "latency_tables.ofa_yaml",
    "open_cache": "latency_tables.model_cache",
    "ArchOutsideTableError": "latency_tables.table",
    "LatencyTable": "latency_tables.table",
    "LatencyTableError": "latency_tables.table",
    "MissingLayerError": "latency_tables.table",
    "PrecisionMismatchError": "latency_tables.table",
    "TableHashError": "latency_tables.table",
    "TableMeta": "latency_tables.table",
    "TableSchemaError": "latency_tables.table",
    "build_table": "latency_tables.table",
    "enumerate_layers": "latency_tables.table",
    "measure_models": "latency_tables.table",
    "LatencyPredictor": "latency_tables.predictor",
    "fit_correction": "latency_tables.predictor",
    "ValidationReport": "latency_tables.predictor",
    "plot_predicted_vs_measured": "latency_tables.predictor",
    "predict_latency": "latency_tables.predictor",
    "validate": "latency_tables.predictor",
    "read_measured_archs": "latency_tables.predictor",
    "validate_measured": "latency_tables.predictor",
    "KitError": "latency_tables.kit",
    "KitManifest": "latency_tables.kit",
    "write_kit": "latency_tables.kit",
    "load_kit": "latency_tables.kit",
    "import_kit_logs": "latency_tables.kit",
    "import_kit_csv": "latency_tables.kit",
    "BenchmarkLogError": "latency_tables.benchmark_log",
    "BenchmarkRun": "latency_tables.benchmark_log",
    "parse_log": "latency_tables.benchmark_log",
    "parse_log_file": "latency_tables.benchmark_log",
}

__all__ = [
    "STATISTICS",
    "ArchOutsideTableError",
    "Backend",
    "BenchmarkLogError",
    "BenchmarkRun",
    "KitError",
    "KitManifest",
    "LatencyPredictor",
    "LatencyTable",
    "LatencyTableError",
    "Measurement",
    "MeasurementProtocol",
    "MissingLayerError",
    "OfaYamlError",
    "PrecisionMismatchError",
    "Protocol",
    "StatisticMismatchError",
    "TableHashError",
    "TableMeta",
    "TableSchemaError",
    "UnsupportedPrecisionError",
    "ValidationReport",
    "build_table",
    "create_backend",
    "enumerate_layers",
    "export_ofa_yaml",
    "fit_correction",
    "import_kit_csv",
    "import_kit_logs",
    "import_ofa_yaml",
    "list_backends",
    "load_kit",
    "measure_models",
    "open_cache",
    "parse_log",
    "parse_log_file",
    "plot_predicted_vs_measured",
    "predict_latency",
    "read_measured_archs",
    "supported_precisions",
    "validate",
    "validate_measured",
    "write_kit",
]

if not TYPE_CHECKING:  # hidden from the type checker, which would otherwise accept any attribute name

    def __getattr__(name: str) -> Any:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module 'latency_tables' has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
