mod config;
mod dtb;
mod elf_image;
mod kernel;
mod pack;
#[cfg(test)]
mod testutil;
fn main(){}
