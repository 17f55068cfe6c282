"""The thin on-prem agent: modules that work alone and can dock with the hosted cloud."""
