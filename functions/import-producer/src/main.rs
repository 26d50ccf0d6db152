use std::sync::Arc;

use import_producer::{ProducerConfig, production_api, router};
use lambda_http::{Error, run};
use queue_worker::Env;
use queue_worker::aws::load_sdk_config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    queue_worker::telemetry::init();
    let env = Env::from_process();
    let config = ProducerConfig::from_env(&env)?;
    let api = production_api(config, &load_sdk_config(&env).await?);
    run(router(Arc::new(api))).await
}
