use std::sync::Arc;

use import_producer::{ProducerConfig, production_api, router};
use lambda_http::{Error, run};
use queue_worker::lambda::{Started, start};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let Started { config, sdk, .. } = start(ProducerConfig::from_env).await?;
    run(router(Arc::new(production_api(config, &sdk)))).await
}
