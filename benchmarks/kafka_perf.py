"""Kafka's own consumer perf tool on the topics a benchmark's consumer read, in the same run: the rate a JVM
consumer reaches on this machine, broker and records being the same, so that our consumers' rates can be
reported as a ratio of it (machines here differ 2x; the ratio does not).

`org.apache.kafka.tools.ConsumerPerformance` (the class behind kafka-consumer-perf-test.sh) runs on the broker's
jars (var/kafka/lib) plus the kafka-tools jar of the same version, which Maven resolves into var/kafka/tools
the first time it is needed.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KAFKA_LIB = REPO / "var" / "kafka" / "lib"
KAFKA_TOOLS = REPO / "var" / "kafka" / "tools"
TOOL = "org.apache.kafka.tools.ConsumerPerformance"


def consumer_perf(bootstrap: str, topics: list[str], records: int, timeout_s: float = 600) -> dict:
    """Read `records` records of `topics` from their beginning in a fresh group: records/s (`records_per_s`,
    None when the tool could not run) and a note saying what it read or why it did not."""
    jar = tools_jar()
    if jar is None:
        return {"records_per_s": None, "note": "kafka-tools jar not available (Maven could not resolve it)"}
    include = "^(" + "|".join(re.escape(t) for t in topics) + ")$"
    done = subprocess.run(
        ["java", "-Xmx512m", "-cp", f"{KAFKA_LIB}/*:{jar}", TOOL,
         "--bootstrap-server", bootstrap, "--include", include, "--num-records", str(records), "--timeout", "30000",
         "--group", f"perf-{uuid.uuid4().hex[:6]}", "--hide-header"],
        capture_output=True, text=True, timeout=timeout_s,
    )
    for line in done.stdout.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) >= 6:  # start, end, MB, MB/s, records, records/s, ...
            return {"records_per_s": float(fields[5]), "note": f"ConsumerPerformance: {int(float(fields[4]))} records"}
    return {"records_per_s": None, "note": f"ConsumerPerformance failed: {done.stderr[-500:]}"}


def tools_jar() -> Path | None:
    """The kafka-tools jar matching the broker's kafka-clients version (resolved with Maven when missing)."""
    for folder in (KAFKA_LIB, KAFKA_TOOLS):
        found = sorted(folder.glob("kafka-tools-[0-9]*.jar"))
        if found:
            return found[-1]
    clients = sorted(KAFKA_LIB.glob("kafka-clients-*.jar"))
    if not clients:
        return None
    version = clients[-1].stem.removeprefix("kafka-clients-")
    subprocess.run(["mvn", "-q", "-B", "dependency:copy", f"-Dartifact=org.apache.kafka:kafka-tools:{version}",
                    f"-DoutputDirectory={KAFKA_TOOLS}"], capture_output=True, timeout=600)
    found = sorted(KAFKA_TOOLS.glob("kafka-tools-[0-9]*.jar"))
    return found[-1] if found else None


def ratio(ours_per_s: float, perf: dict) -> float | None:
    """Our records/s over the tool's (None when the tool did not run)."""
    return round(ours_per_s / perf["records_per_s"], 3) if perf.get("records_per_s") else None
