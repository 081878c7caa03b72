//! `order.place`: sells `quantity` of a product, refusing unknown products and short stock.

use schemars::JsonSchema;
use serde::Deserialize;
use sluice::sqlx::PgConnection;
use sluice::{CommandType, Envelope, Handle, HandlerError, Incoming, Outcome, PayloadSchema};

/// Places an order for one product.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// The caller's id for the order, unique within the tenant.
    #[schemars(length(min = 1, max = 64))]
    pub order_id: String,
    #[schemars(length(min = 1, max = 64))]
    pub sku: String,
    #[schemars(range(min = 1, max = 1000))]
    pub quantity: i32,
}

impl CommandType for PlaceOrder {
    const TYPE: &'static str = "order.place";
    fn schema() -> PayloadSchema {
        PayloadSchema::derived::<Self>()
    }
}

/// Handles `order.place`.
pub struct PlaceOrderHandler;

impl Handle<PlaceOrder> for PlaceOrderHandler {
    /// Orders of one product are applied one at a time, so stock is checked against what the
    /// previous order left (the row lock below would do too; the key also orders batches).
    fn lock_keys(&self, p: &PlaceOrder, env: &Envelope) -> Vec<String> {
        vec![format!("shop/{}/product/{}", env.tenant, p.sku)]
    }

    async fn handle(&self, tx: &mut PgConnection, cmd: Incoming<'_, PlaceOrder>) -> Result<Outcome, HandlerError> {
        let (p, env) = (&cmd.payload, cmd.envelope);
        let product: Option<(i64, i32)> =
            sqlx::query_as("SELECT price_cents, stock FROM shop.products WHERE tenant = $1 AND sku = $2 FOR UPDATE")
                .bind(&env.tenant)
                .bind(&p.sku)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((price_cents, stock)) = product else {
            return Ok(Outcome::rejected("unknown_product", format!("there is no product {:?}", p.sku)));
        };
        if stock < p.quantity {
            return Ok(Outcome::rejected(
                "out_of_stock",
                format!("{} of {:?} ordered, {stock} in stock", p.quantity, p.sku),
            ));
        }
        let total_cents = price_cents * i64::from(p.quantity);
        let placed = sqlx::query(
            "INSERT INTO shop.orders (tenant, order_id, sku, quantity, total_cents, command_id, placed_at)
             VALUES ($1, $2, $3, $4, $5, $6, now()) ON CONFLICT (tenant, order_id) DO NOTHING",
        )
        .bind(&env.tenant)
        .bind(&p.order_id)
        .bind(&p.sku)
        .bind(p.quantity)
        .bind(total_cents)
        .bind(env.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if placed == 0 {
            return Ok(Outcome::rejected("order_exists", format!("order {:?} was already placed", p.order_id)));
        }
        sqlx::query("UPDATE shop.products SET stock = stock - $3 WHERE tenant = $1 AND sku = $2")
            .bind(&env.tenant)
            .bind(&p.sku)
            .bind(p.quantity)
            .execute(&mut *tx)
            .await?;
        Ok(Outcome::succeeded(serde_json::json!({
            "order_id": p.order_id,
            "total_cents": total_cents,
            "stock_left": stock - p.quantity,
        })))
    }
}
