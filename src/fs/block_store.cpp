#include "fs/block_store.hpp"
