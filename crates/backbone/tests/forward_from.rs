//! `Backbone::forward_from`: run from any stage's map, every backbone gives exactly the later stages of
//! `forward_stages`, in evaluation and training mode; a stage out of range is an error.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use fgvc_backbone::{
    Backbone, MobileNetV2, MobileNetV2Config, ResNet, ResNetConfig, Vgg, VggConfig,
};
use fgvc_ops::ParamStore;

fn input(n: usize, size: usize) -> Result<Tensor> {
    let len = n * 3 * size * size;
    let data: Vec<f32> = (0..len)
        .map(|i| ((i * 7919) % 997) as f32 / 498.5 - 1.0)
        .collect();
    Ok(Tensor::from_vec(data, (n, 3, size, size), &Device::Cpu)?)
}

fn check(name: &str, net: &dyn Backbone, x: &Tensor) -> Result<()> {
    for train in [false, true] {
        let stages = net.forward_stages(x, train)?;
        assert_eq!(stages.len(), net.stage_info().len(), "{name}");
        for k in 0..stages.len() {
            let rest = net.forward_from(k, &stages[k], train)?;
            assert_eq!(rest.len(), stages.len() - k - 1, "{name} from stage {k}");
            for (j, (got, want)) in rest.iter().zip(&stages[k + 1..]).enumerate() {
                assert_eq!(
                    got.dims(),
                    want.dims(),
                    "{name} from {k}: stage {}",
                    k + 1 + j
                );
                let diff = got
                    .sub(want)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f32>()?;
                assert_eq!(
                    diff,
                    0.0,
                    "{name} train={train} from {k}: stage {}",
                    k + 1 + j
                );
            }
        }
        let err = net
            .forward_from(stages.len(), &stages[0], train)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("stage {} is out of range", stages.len())),
            "{name}: {err}"
        );
    }
    Ok(())
}

#[test]
fn forward_from_a_stage_gives_the_later_stages_of_forward_stages() -> Result<()> {
    let x = input(2, 32)?;
    let store = ParamStore::new(3, DType::F32, &Device::Cpu);
    let resnet = ResNet::new(
        ResNetConfig {
            base_width: 8,
            ..ResNetConfig::resnet18(Some(5))
        },
        &store.root(),
    )?;
    check("resnet18", &resnet, &x)?;
    let store = ParamStore::new(4, DType::F32, &Device::Cpu);
    let resnet50 = ResNet::new(
        ResNetConfig {
            base_width: 4,
            ..ResNetConfig::resnet50(None)
        },
        &store.root(),
    )?;
    check("resnet50", &resnet50, &x)?;
    let store = ParamStore::new(5, DType::F32, &Device::Cpu);
    let vgg = Vgg::new(
        VggConfig {
            hidden: 16,
            ..VggConfig::vgg16(true, Some(5))
        },
        &store.root(),
    )?;
    check("vgg16_bn", &vgg, &x)?;
    let store = ParamStore::new(6, DType::F32, &Device::Cpu);
    let mobilenet = MobileNetV2::new(
        MobileNetV2Config {
            width_mult: 0.25,
            num_classes: Some(5),
            ..Default::default()
        },
        &store.root(),
    )?;
    check("mobilenet_v2", &mobilenet, &x)?;
    Ok(())
}
