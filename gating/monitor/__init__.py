"""Production monitoring: telemetry roll-ups, rules over rates and windows, anomaly detection.

The App ingests OpenTelemetry into minute roll-ups (`rollup.Rollup`); rules read roll-ups through
`rollup.RollupSource`, so the same evaluation runs over the App's database, an in-memory list in a
test, or anything else that can answer a window query.
"""
