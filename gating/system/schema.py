"""JSON Schema of gating.yml, one constant per section so each section can grow on its own."""

from __future__ import annotations

from typing import Any

CATEGORIES = ["model", "prompt", "retrieval", "tool", "guardrail", "orchestration", "code", "cassette", "evals",
              "policy"]
EVAL_MODES = ["live", "replay"]
PROVIDERS = ["openai", "anthropic", "replay", "azure", "ollama", "vllm", "litellm", "bedrock", "google", "vertex"]
# A model's provider-specific settings, and the provider each belongs to (gating/evals/dialects).
PROVIDER_SETTINGS = {"deployment": "azure", "api_version": "azure", "project": "vertex", "location": "vertex",
                     "region": "bedrock"}
PERMISSIONS = ["read", "triage", "write", "maintain", "admin"]

_str_list: dict[str, Any] = {"type": "array", "items": {"type": "string", "minLength": 1}}
_file_globs: dict[str, Any] = {
    "type": "object",
    "properties": {"files": {**_str_list, "minItems": 1}},
    "required": ["files"],
    "additionalProperties": False,
}
_name = {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}

MODELS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": _name,
    "additionalProperties": {
        "type": "object",
        "properties": {
            "provider": {"type": "string", "enum": PROVIDERS},
            "model": {"type": "string", "minLength": 1},
            "params": {
                "type": "object",
                "properties": {
                    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
                    "max_tokens": {"type": "integer", "minimum": 1},
                    "seed": {"type": "integer"},
                },
            },
            "base_url": {"type": "string"},
            "api_key_env": {"type": "string"},
            "pinned": {"type": "boolean"},
            **{k: {"type": "string", "minLength": 1} for k in PROVIDER_SETTINGS},
        },
        "required": ["provider", "model"],
        "additionalProperties": False,
    },
}

PROMPTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": _name,
    "additionalProperties": {
        "type": "object",
        "properties": {
            "file": {"type": "string", "minLength": 1},
            "model": {"type": "string"},
            "system": {"type": "string"},
            "description": {"type": "string"},
        },
        "required": ["file"],
        "additionalProperties": False,
    },
}

RETRIEVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "embedding_model": {"type": "string"},
        "chunk_size": {"type": "integer", "minimum": 1},
        "chunk_overlap": {"type": "integer", "minimum": 0},
        "top_k": {"type": "integer", "minimum": 1},
        "score_threshold": {"type": "number"},
        "reranker": {"type": "string"},
        "index": {"type": "string"},
        "files": _str_list,
        "params": {"type": "object"},
    },
    "additionalProperties": False,
}

ORCHESTRATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "retries": {"type": "integer", "minimum": 0},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0},
        "fallback": _str_list,
        "files": _str_list,
    },
    "additionalProperties": True,
}

EVALS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "datasets": {**_str_list, "minItems": 1},
        "target": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": ["prompt", "command", "http"]},
                "run": {"type": "string"},
                "url": {"type": "string"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "timeout_s": {"type": "number", "exclusiveMinimum": 0},
                "code": _str_list,  # files the command or service runs: part of the system
            },
            "required": ["type"],
            "additionalProperties": False,
        },
        "judge": {"type": "string"},
        "embedding": {"type": "string"},  # the model component `similar` embeds with
        # Python files the evals run (python assertions, transforms): part of the system, judged from the base
        "python": _str_list,
        "transform": {"type": "string", "minLength": 1},  # file://PATH.py:FUNCTION or inline Python
        "python_timeout_s": {"type": "number", "exclusiveMinimum": 0},
        "files": _str_list,  # files the cases read (`file://` vars): part of the system
        "generate": {"type": "array", "items": {"type": "string", "pattern": r"^file://[^:]+\.py(:[A-Za-z_]\w*)?$"}},
        "defaults": {  # applied to every case: its vars and assertions first, the case's own after
            "type": "object",
            "properties": {
                "vars": {"type": "object"},
                "assert": {"type": "array", "items": {"type": "object"}},
                "transform": {"type": "string", "minLength": 1},
                "threshold": {"type": "number", "minimum": 0, "maximum": 1},
            },
            "additionalProperties": False,
        },
        "mode": {"type": "string", "enum": EVAL_MODES},  # live, or replay the cassettes
        "thresholds": {
            "type": "object",
            "additionalProperties": {"type": "string", "pattern": r"^\s*(>=|<=|>|<|==)\s*-?[0-9.]+\s*$"},
        },
        "regression": {
            "type": "object",
            "properties": {
                "max_drop": {"type": "number", "minimum": 0, "maximum": 1},
                "alpha": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            },
            "additionalProperties": False,
        },
        "traffic": {
            "type": "object",
            "properties": {"requests_per_day": {"type": "number", "minimum": 0}},
            "additionalProperties": False,
        },
        "candidates": {  # `gating eval --compare`: other models or prompt variants, run on the same cases
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "model": {"type": "string", "minLength": 1},
                    "prompts": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}},
                },
                "anyOf": [{"required": ["model"]}, {"required": ["prompts"]}],
                "additionalProperties": False,
            },
        },
        "concurrency": {"type": "integer", "minimum": 1},
        "workers": {"type": "integer", "minimum": 1},
        "pacing": {"type": "boolean"},  # adapt the concurrency to the provider's rate limits (default true)
        "repeat": {"type": "integer", "minimum": 1},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0},
        "cache": {"type": "boolean"},
        "prices": {"type": "string"},
        "calibration": {
            "type": "object",
            "properties": {
                "ratings": {"type": "string"},
                "min_agreement": {"type": "number", "minimum": 0, "maximum": 1},
                "metric": {"type": "string", "enum": ["exact", "within_one", "kappa"]},
            },
            "additionalProperties": False,
        },
    },
    "required": ["datasets"],
    "additionalProperties": False,
}

_condition: dict[str, Any] = {
    "type": "object",
    "properties": {
        "changed_files": _str_list,
        "ignore": _str_list,
        "manifest_paths": _str_list,
        "categories": {"type": "array", "items": {"type": "string", "enum": CATEGORIES}},
        "labels": _str_list,
        "target_branches": _str_list,
        "authors": {
            "type": "object",
            "properties": {"users": _str_list, "teams": _str_list},
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

APPROVAL_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "if": _condition,
        "requires": {
            "type": "object",
            "properties": {
                "count": {"type": "integer", "minimum": 0},
                "users": _str_list,
                "teams": _str_list,
                "permission": {"type": "string", "enum": PERMISSIONS},
            },
            "additionalProperties": False,
        },
        "options": {
            "type": "object",
            "properties": {
                "allow_author": {"type": "boolean"},
                "invalidate_on_push": {"type": "boolean"},
                "ignore_bots": {"type": "boolean"},
                "require_evidence": {"type": "boolean"},
                "invalidate_override_on_push": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        "and": {"type": "array", "items": {"$ref": "#/$defs/rule"}, "minItems": 1},
        "or": {"type": "array", "items": {"$ref": "#/$defs/rule"}, "minItems": 1},
    },
    "required": ["name"],
    "additionalProperties": False,
}

APPROVALS_SCHEMA: dict[str, Any] = {"type": "array", "items": {"$ref": "#/$defs/rule"}}

ROLLBACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "who": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "mode": {"type": "string", "enum": ["pull_request", "direct"]},
        "on_deploy_failure": {"type": "boolean"},
        "environments": _str_list,
        "on_alert": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "match": {"type": "object", "additionalProperties": {"type": "string"}},
                    "match_re": {"type": "object", "additionalProperties": {"type": "string"}},
                    "repository": {"type": "string", "pattern": "^[^/\\s]+/[^/\\s]+$"},
                    "target": {"type": "string", "pattern": "^(last-good|previous|[0-9a-fA-F]{7,40})$"},
                },
                "anyOf": [{"required": ["match"]}, {"required": ["match_re"]}],
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}

# monitor: rules over production telemetry (gating.monitor.rules reads them; the names are its vocabulary).
MONITOR_METRICS = ["error_rate", "negative_feedback_rate", "latency_p50", "latency_p95", "latency_p99",
                   "tokens_per_request", "cost_per_day", "requests_per_minute"]
MONITOR_STAGES = ["request", "embedding", "retrieval", "llm", "post"]
MONITOR_ERRORS = ["rate_limit", "content_filter", "timeout", "parse", "other"]
MONITOR_ACTIONS = ["rollback", "notify"]
MONITOR_SEVERITIES = ["critical", "warning", "info"]
DURATION_PATTERN = r"^\s*[1-9][0-9]*\s*(m|h|d)\s*$"  # whole minutes, hours or days: 15m, 1h, 1d
DEFAULT_BAKE_MINUTES = 30


def duration_minutes(text: str) -> int | None:
    """'15m' / '1h' / '1d' -> minutes; None for anything else (read by the diff and by gating.monitor)."""
    import re
    m = re.match(DURATION_PATTERN, str(text))
    return int(m.group(0).strip()[:-1]) * {"m": 1, "h": 60, "d": 1440}[m.group(1)] if m else None


MONITOR_THRESHOLD_PATTERN = r"^\s*(>=|<=|>|<)\s*[0-9]+(\.[0-9]+)?\s*(x\s*projected)?\s*$"

MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "bake_minutes": {"type": "integer", "minimum": 0, "maximum": 10080},
        "issue": {"type": "integer", "minimum": 1},  # the tracking issue `action: notify` comments on
        "service": {"type": "string", "minLength": 1},  # service.name of the telemetry (default: name)
        "rules": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": _name,
                    "metric": {"type": "string", "enum": MONITOR_METRICS},
                    "category": {"type": "string", "enum": MONITOR_ERRORS},  # error_rate of one category
                    "stage": {"type": "string", "enum": MONITOR_STAGES},
                    "component": {"type": "string", "minLength": 1},
                    "threshold": {"type": "string", "pattern": MONITOR_THRESHOLD_PATTERN},
                    "for": {"type": "string", "pattern": DURATION_PATTERN},
                    "min_requests": {"type": "integer", "minimum": 0},
                    "anomaly": {
                        "type": "object",
                        "properties": {
                            "z": {"type": "number", "exclusiveMinimum": 0},
                            "weeks": {"type": "integer", "minimum": 1, "maximum": 12},
                            "min_weeks": {"type": "integer", "minimum": 1, "maximum": 12},
                            "direction": {"type": "string", "enum": ["up", "down", "both"]},
                        },
                        "additionalProperties": False,
                    },
                    "action": {"type": "string", "enum": MONITOR_ACTIONS},
                    "severity": {"type": "string", "enum": MONITOR_SEVERITIES},
                },
                "required": ["name", "metric", "for", "action"],
                "anyOf": [{"required": ["threshold"]}, {"required": ["anomaly"]}],
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}

# deploy: which GitHub environments the App's deployment protection rule gates, in promotion order
# (gating.deploy reads it): a deployment to environments[i>0] needs the snapshot known-good in
# environments[i-1]; an environment in `exceptions` is approved without checks.
DEPLOY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "environments": {**_str_list, "minItems": 1, "uniqueItems": True},
        "exceptions": {**_str_list, "uniqueItems": True},
    },
    "additionalProperties": False,
}

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "version": {"const": 1},
        "name": {"type": "string", "minLength": 1},
        "components": {
            "type": "object",
            "properties": {
                "models": MODELS_SCHEMA,
                "prompts": PROMPTS_SCHEMA,
                "retrieval": RETRIEVAL_SCHEMA,
                "tools": _file_globs,
                "guardrails": _file_globs,
                "orchestration": ORCHESTRATION_SCHEMA,
            },
            "additionalProperties": False,
        },
        "evals": EVALS_SCHEMA,
        "approvals": APPROVALS_SCHEMA,
        "rollback": ROLLBACK_SCHEMA,
        "monitor": MONITOR_SCHEMA,
        "deploy": DEPLOY_SCHEMA,
    },
    "required": ["version", "name", "components"],
    "additionalProperties": False,
    "$defs": {"rule": APPROVAL_RULE_SCHEMA},
}
