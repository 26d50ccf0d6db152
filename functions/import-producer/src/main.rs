use std::sync::Arc;

use import_producer::{ProducerConfig, production_api, router};
use lambda_http::{Error, run};
use shared::Env;
use shared::aws::load_sdk_config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config = ProducerConfig::from_env(&Env::from_process())?;
    let api = production_api(config, &load_sdk_config().await);
    run(router(Arc::new(api))).await
}
