pub mod apache;
