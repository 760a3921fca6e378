"""What pyro-vae 0.1 wrote, for the tests of its migration (``test_config``, ``test_runs``)."""

#: 0.1's one flat ``[inference]`` record: every algorithm's fields, whichever ran.
LEGACY_INFERENCE = """[inference]
name = "{name}"
elbo = "{elbo}"
num_particles = {num_particles}
insomnia = 1.0
hmc_steps = 1
hmc_leapfrog_steps = 10
hmc_step_size = 0.1
target_accept = 0.9
hmc_backend = "batched"
num_chains = 1
m_steps = 5
fit_guide = true
kl_weight = 1.0
warmup_epochs = 0
"""


def legacy_inference_toml(name: str, elbo: str, num_particles=1) -> str:
    return LEGACY_INFERENCE.format(name=name, elbo=elbo, num_particles=num_particles)
