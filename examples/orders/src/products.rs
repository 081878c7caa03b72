//! `product.add`: a product and its stock, per tenant.

use schemars::JsonSchema;
use serde::Deserialize;
use sluice::sqlx::PgConnection;
use sluice::{CommandType, Handle, HandlerError, Incoming, Outcome, PayloadSchema};

/// Puts a product on sale.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddProduct {
    /// The product's code, unique within the tenant.
    #[schemars(length(min = 1, max = 64))]
    pub sku: String,
    #[schemars(range(min = 0))]
    pub price_cents: i64,
    #[schemars(range(min = 0, max = 1_000_000))]
    pub stock: i32,
}

impl CommandType for AddProduct {
    const TYPE: &'static str = "product.add";
    fn schema() -> PayloadSchema {
        PayloadSchema::derived::<Self>()
    }
}

/// Handles `product.add`.
pub struct AddProductHandler;

impl Handle<AddProduct> for AddProductHandler {
    async fn handle(&self, tx: &mut PgConnection, cmd: Incoming<'_, AddProduct>) -> Result<Outcome, HandlerError> {
        let (p, tenant) = (&cmd.payload, &cmd.envelope.tenant);
        let added = sqlx::query(
            "INSERT INTO shop.products (tenant, sku, price_cents, stock) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(&p.sku)
        .bind(p.price_cents)
        .bind(p.stock)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if added == 0 {
            return Ok(Outcome::rejected("product_exists", format!("product {:?} already exists", p.sku)));
        }
        Ok(Outcome::succeeded(serde_json::json!({ "sku": p.sku, "stock": p.stock })))
    }
}
