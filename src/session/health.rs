//! `grpc.health.v1.Health`: the daemon checks the session about every 5 s and
//! drops it after two failed checks, so every session serves this.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::wire::grpc::health::v1::health_check_response::ServingStatus;
use crate::wire::grpc::health::v1::health_server::{Health, HealthServer};
use crate::wire::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};

pub(crate) const METHODS: &[&str] = &["/grpc.health.v1.Health/Check"];

#[derive(Debug, Default, Clone)]
pub(crate) struct AlwaysServing;

pub(crate) fn service() -> HealthServer<AlwaysServing> {
    HealthServer::new(AlwaysServing)
}

#[tonic::async_trait]
impl Health for AlwaysServing {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("the session only answers Check"))
    }
}
