//! Rebuilds the crate when a migration changes: they are embedded at compile time
//! (`diesel_migrations::embed_migrations!`), which cargo does not track by itself.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
