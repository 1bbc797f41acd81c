"""The gRPC surface of MonitoringService (logic in `recsys.monitoring.service`)."""

from __future__ import annotations

from recsys.common.server import GrpcServer, ServerOptions
from recsys.monitoring.service import MonitoringService
from recsys.v1 import monitoring_pb2, monitoring_pb2_grpc

SERVICE_NAME = monitoring_pb2.DESCRIPTOR.services_by_name["MonitoringService"].full_name


class MonitoringServicer(monitoring_pb2_grpc.MonitoringServiceServicer):
    """Each RPC is one call of the service."""

    def __init__(self, service: MonitoringService) -> None:
        self.service = service

    def GetOnlineMetrics(self, request: monitoring_pb2.GetOnlineMetricsRequest, context):
        return self.service.online_metrics(request)

    def GetDriftReport(self, request: monitoring_pb2.GetDriftReportRequest, context) -> monitoring_pb2.DriftReport:
        return self.service.drift_report(request)

    def ListAlerts(self, request: monitoring_pb2.ListAlertsRequest, context) -> monitoring_pb2.ListAlertsResponse:
        return self.service.alerts(request)


def create_server(service: MonitoringService, options: ServerOptions) -> GrpcServer:
    """The MonitoringService on the shared bootstrap (health, reflection, metrics, draining)."""
    servicer = MonitoringServicer(service)
    return GrpcServer(
        "monitoring",
        [lambda server: monitoring_pb2_grpc.add_MonitoringServiceServicer_to_server(servicer, server)],
        [SERVICE_NAME],
        options,
    )
