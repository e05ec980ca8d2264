"""FedAvg on MNIST with McMahan et al.'s pathological non-IID shards (2 labels per client).

Run: FEDLOOM_DATA=../shared/data python examples/mnist_shards_fedavg.py
The same experiment as a config: fedloom run --config examples/mnist_shards_fedavg.yaml
"""

import fedloom as fl

data = fl.federate(fl.load_mnist(), fl.data.Shards(num_clients=100, shards_per_client=2))
history = fl.simulate(
    fl.fedavg(),
    data,
    fl.models.mnist_2nn,
    rounds=20,
    fraction=0.1,
    local=fl.LocalTraining(epochs=5, batch_size=10, lr=0.05),
)
print(f"test accuracy after 20 rounds: {history.reports[-1].metrics['test_accuracy']:.3f}")
