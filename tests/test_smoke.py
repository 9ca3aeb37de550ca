import daft


def test_cluster_has_two_nodes(ray_cluster):
    import ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    assert daft.from_pydict({"x": [1, 2, 3]}).count_rows() == 3
