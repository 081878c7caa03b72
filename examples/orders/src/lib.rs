//! An order book on sluice: `product.add` stocks a product, `order.place` sells some of it.
//! Everything else (the HTTP API, validation against these schemas, batches, retries, dead
//! letters, the dashboard, metrics) is sluice's.

mod orders;
mod products;

pub use orders::{PlaceOrder, PlaceOrderHandler};
pub use products::{AddProduct, AddProductHandler};

/// This application: sluice with the shop's command types and tables.
pub fn app(settings: sluice::Settings) -> sluice::AppBuilder {
    sluice::App::builder(settings)
        .command::<AddProduct>(AddProductHandler)
        .command::<PlaceOrder>(PlaceOrderHandler)
        .migrations("shop", sqlx::migrate!())
}
