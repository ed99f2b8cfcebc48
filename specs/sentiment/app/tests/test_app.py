def test_predict(): pass
