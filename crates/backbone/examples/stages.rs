//! Prints a backbone's stages (module, channels, stride, output shape) for one input size.
//!
//! ```sh
//! cargo run --release -p fgvc-backbone --example stages -- mobilenet_v2 448
//! ```

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use fgvc_backbone::{build, BackboneKind};
use fgvc_ops::ParamStore;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let kind: BackboneKind = args.next().as_deref().unwrap_or("resnet50").parse()?;
    let size: usize = args.next().as_deref().unwrap_or("224").parse()?;
    let store = ParamStore::new(0, DType::F32, &Device::Cpu);
    let net = build(kind, None, &store.root())?;
    let params: usize = store.trainable().iter().map(|(_, v)| v.elem_count()).sum();
    println!(
        "{kind} (headless): {:.2} M parameters, {} features",
        params as f64 / 1e6,
        net.num_features()
    );
    let x = Tensor::zeros((1, 3, size, size), DType::F32, &Device::Cpu)?;
    for (info, map) in net.stage_info().iter().zip(net.forward_stages(&x, false)?) {
        println!(
            "  {:<7} {:<12} {:>5} ch  stride {:>2}  {:?}",
            info.name,
            info.module,
            info.channels,
            info.reduction,
            map.dims()
        );
    }
    Ok(())
}
