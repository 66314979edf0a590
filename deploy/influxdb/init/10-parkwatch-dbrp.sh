#!/bin/bash
# Run once by the influxdb image, right after its first setup (DOCKER_INFLUXDB_INIT_MODE=setup),
# with the influx CLI already logged in as the admin. It maps the ParkWatch bucket to the InfluxQL
# database "parkwatch", retention policy "autogen": Grafana's dashboards query InfluxQL, which
# InfluxDB 2.x answers only through such a DBRP mapping.
set -euo pipefail

db="${PARKWATCH_INFLUXQL_DATABASE:-parkwatch}"

if influx v1 dbrp list --org "${DOCKER_INFLUXDB_INIT_ORG}" --db "${db}" --hide-headers \
        | grep -q .; then
    echo "parkwatch: a DBRP mapping for database ${db} already exists; leaving it"
    exit 0
fi

influx v1 dbrp create \
    --org "${DOCKER_INFLUXDB_INIT_ORG}" \
    --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
    --db "${db}" \
    --rp autogen \
    --default
echo "parkwatch: bucket ${DOCKER_INFLUXDB_INIT_BUCKET} is InfluxQL database ${db}, retention policy autogen"
