#!/bin/sh
# Formats KRaft storage on first start, then runs the broker in the foreground.
# KAFKA_ADVERTISED_HOST is the name other containers use to reach this broker.
set -eu
DATA=/var/lib/kafka
CONFIG="$DATA/server.properties"
HOST="${KAFKA_ADVERTISED_HOST:-kafka}"
CLASSPATH="/opt/kafka/libs/*"
JAVA="java ${KAFKA_HEAP_OPTS:--Xmx512m} -cp $CLASSPATH -Dlog4j2.configurationFile=/opt/kafka/log4j2.properties"

cat > "$CONFIG" <<PROPERTIES
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://${HOST}:9092
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.voters=1@127.0.0.1:9093
log.dirs=$DATA/data
num.partitions=6
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPERTIES

if [ ! -f "$DATA/data/meta.properties" ]; then
  $JAVA kafka.tools.StorageTool format -t "$($JAVA kafka.tools.StorageTool random-uuid)" -c "$CONFIG"
fi
exec $JAVA kafka.Kafka "$CONFIG"
