mod config;
fn main(){}
